"""php_value / php_flag / php_admin_value / php_admin_flag under sufcgi's php-cgi pools.

Sites written for mod_php set ini values in .htaccess. Without mod_php, sufcgi
turns them into `-d NAME="VALUE"` arguments of the SuFcgiWrapper php-cgi workers
of that directory (never a per-request PHP_VALUE parameter). These tests run real
php-cgi under real users and read the values back with ini_get().

Users sufcgi-php-* (uids 2301-2310) are this module's own; one Apache (event MPM)
serves vhosts for them. Two runs of this module at once would share those users,
so a run holds LOCK_FILE.
"""
from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

import harness
from harness import Vhost, ensure_user, mkdir, put

LOCK_FILE = Path("/tmp/sufcgi-php-tests.lock")
PHP_CGI = "/usr/bin/php-cgi"
WRAPPER = f"SuFcgiWrapper {PHP_CGI} .php\nSuFcgiMaxWorkers 1\n"

SITE = "site.php.test"      # user a: one directory per behaviour
WP = "wp.php.test"          # user b: a WordPress-style document root
FORBID = "forbid.php.test"  # user c: a vhost with SuFcgiPhpForbid
FILEINFO = "fileinfo.php.test"  # user c again, AllowOverride FileInfo only

# ini_get() of the names in ?n=a,b and what the worker can tell about itself.
INI_PHP = r"""<?php
header('Content-Type: application/json');
$names = isset($_GET['n']) && $_GET['n'] !== '' ? explode(',', $_GET['n']) : array();
$ini = array();
foreach ($names as $n) { $v = ini_get($n); $ini[$n] = ($v === false) ? null : $v; }
echo json_encode(array(
    'pid' => getmypid(),
    'uid' => posix_getuid(),
    'ini' => $ini,
    'per_request_ini' => isset($_SERVER['PHP_VALUE']) || isset($_SERVER['PHP_ADMIN_VALUE']),
    'uri' => isset($_SERVER['REQUEST_URI']) ? $_SERVER['REQUEST_URI'] : '',
    'script' => isset($_SERVER['SCRIPT_FILENAME']) ? $_SERVER['SCRIPT_FILENAME'] : '',
), JSON_UNESCAPED_SLASHES);
"""


# ---------------------------------------------------------------- fixtures and helpers


class PhpSite:
    def __init__(self):
        self.a = ensure_user("sufcgi-php-a", 2301)
        self.b = ensure_user("sufcgi-php-b", 2302)
        self.c = ensure_user("sufcgi-php-c", 2303)
        for u in (self.a, self.b, self.c):
            for child in u.www.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def dir(self, user, rel: str, htaccess: str | None, script: bool = True) -> Path:
        """user's www/REL with .htaccess (None: none) and ini.php."""
        d = user.www / rel
        mkdir(d, user.ids)
        if htaccess is not None:
            put(d / ".htaccess", htaccess, user.ids)
        if script:
            put(d / "ini.php", INI_PHP, user.ids)
        return d

    def vhosts(self) -> list[Vhost]:
        admin = (f"  <Directory {self.a.www}/admin>\n"
                 f"    php_admin_value memory_limit 40M\n"
                 f"    php_admin_flag display_errors off\n"
                 f"  </Directory>")
        return [
            Vhost(SITE, self.a.www, extra=admin),
            Vhost(WP, self.b.www),
            Vhost(FORBID, self.c.www, extra="  SuFcgiPhpForbid auto_prepend_file session.*"),
            Vhost(FILEINFO, self.c.www, allow_override="FileInfo"),
        ]


@pytest.fixture(scope="module")
def php_site():
    if not os.access(PHP_CGI, os.X_OK):
        pytest.fail(f"{PHP_CGI} is missing (make deps installs php-cgi)", pytrace=False)
    with harness.exclusive(LOCK_FILE, "the php tests"):
        yield PhpSite()


@pytest.fixture(scope="module")
def apache(request, php_site, sufcgi_module):
    yield from harness.serve(request, harness.Apache(mpm="event", vhosts=php_site.vhosts()))


def log_of(a: harness.Apache, mark: int = 0) -> str:
    return f"\n--- error log {a.error_log} since mark ---\n{a.log_since(mark)[-4000:]}"


def ini(a: harness.Apache, host: str, path: str, *names: str) -> dict:
    """GET path?n=names from a php-cgi worker: its JSON (asserting 200)."""
    q = urllib.parse.urlencode({"n": ",".join(names)})
    sep = "&" if "?" in path else "?"
    r = a.get(f"{path}{sep}{q}", host=host)
    assert r.status == 200, f"GET {path} (Host {host}): expected 200, got {r}{log_of(a)}"
    j = r.json()
    assert j["per_request_ini"] is False, "PHP_VALUE / PHP_ADMIN_VALUE must never be sent per request"
    return j


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def refused(a: harness.Apache, host: str, path: str, htaccess: Path, line: int, reasons) -> str:
    """The request is a 500 and the error log names the file, the line and a reason."""
    mark = a.log_mark()
    r = a.get(path, host=host)
    assert r.status == 500, f"GET {path}: expected 500, got {r.status} {r.body[:200]!r}{log_of(a, mark)}"
    text = a.wait_log(mark, lambda t: str(htaccess) in t, f"a log line naming {htaccess}")
    assert any(str(htaccess) in l and re.search(rf"\bline {line}\b", l) and any(k in l for k in reasons)
               for l in text.splitlines()), \
        f"no log line naming {htaccess}, 'line {line}' and one of {reasons}:{log_of(a, mark)}"
    return text


# ---------------------------------------------------------------- the values reach php-cgi


def test_php_value_is_seen_by_ini_get_and_passed_as_worker_arguments(apache, php_site):
    php_site.dir(php_site.a, "basic", WRAPPER +
                 "php_value upload_max_filesize 64M\n"
                 "php_value post_max_size 65M\n"
                 'php_value user_agent "a \\"b\\" $HOME c\\\\d;e"\n'
                 "php_value error_log none\n")
    j = ini(apache, SITE, "/basic/ini.php", "upload_max_filesize", "post_max_size", "user_agent", "error_log")
    assert j["uid"] == php_site.a.uid
    assert j["ini"] == {"upload_max_filesize": "64M", "post_max_size": "65M",
                        "user_agent": 'a "b" $HOME c\\d;e', "error_log": ""}
    # (httpd's own parser turned \" into " and \\ into \; sufcgi passes the rest literally)
    argv = cmdline(j["pid"])
    assert 'upload_max_filesize="64M"' in argv and "-d" in argv, argv
    assert 'user_agent="a \\"b\\" \\$HOME c\\\\d;e"' in argv, argv


def test_two_directories_with_different_values_each_see_their_own(apache, php_site):
    php_site.dir(php_site.a, "two/one", WRAPPER + "php_value memory_limit 71M\n")
    php_site.dir(php_site.a, "two/other", WRAPPER + "php_value memory_limit 72M\n")
    one = ini(apache, SITE, "/two/one/ini.php", "memory_limit")
    other = ini(apache, SITE, "/two/other/ini.php", "memory_limit")
    assert one["ini"]["memory_limit"] == "71M"
    assert other["ini"]["memory_limit"] == "72M"
    assert one["pid"] != other["pid"], "different settings are different pools"
    # ...and each keeps its own value on later requests.
    assert ini(apache, SITE, "/two/one/ini.php", "memory_limit")["ini"]["memory_limit"] == "71M"


def test_subdirectory_inherits_and_overrides(apache, php_site):
    php_site.dir(php_site.a, "tree", WRAPPER +
                 "php_value memory_limit 81M\nphp_value max_input_vars 1234\n")
    php_site.dir(php_site.a, "tree/plain", None)                     # no settings of its own
    php_site.dir(php_site.a, "tree/deeper", "php_value memory_limit 82M\n")
    top = ini(apache, SITE, "/tree/ini.php", "memory_limit", "max_input_vars")
    plain = ini(apache, SITE, "/tree/plain/ini.php", "memory_limit", "max_input_vars")
    deeper = ini(apache, SITE, "/tree/deeper/ini.php", "memory_limit", "max_input_vars")
    assert top["ini"] == {"memory_limit": "81M", "max_input_vars": "1234"}
    assert plain["ini"] == top["ini"]
    assert plain["pid"] == top["pid"], "the same effective settings share one pool"
    assert deeper["ini"] == {"memory_limit": "82M", "max_input_vars": "1234"}, "inherited and overridden"
    assert deeper["pid"] != top["pid"]


def test_php_flag_on_and_off(apache, php_site):
    php_site.dir(php_site.a, "flags", WRAPPER + "php_flag display_errors On\nphp_flag html_errors off\n")
    j = ini(apache, SITE, "/flags/ini.php", "display_errors", "html_errors")
    assert j["ini"] == {"display_errors": "1", "html_errors": "0"}


def test_changed_value_is_seen_on_the_next_request(apache, php_site):
    d = php_site.dir(php_site.a, "changing", WRAPPER + "php_value max_input_vars 1111\n")
    first = ini(apache, SITE, "/changing/ini.php", "max_input_vars")
    assert first["ini"]["max_input_vars"] == "1111"
    put(d / ".htaccess", WRAPPER + "php_value max_input_vars 2222\n", php_site.a.ids)
    second = ini(apache, SITE, "/changing/ini.php", "max_input_vars")
    assert second["ini"]["max_input_vars"] == "2222", "no restart needed"
    assert second["pid"] != first["pid"]


def test_php_admin_value_in_host_directory_beats_customer_value(apache, php_site):
    # <Directory .../admin> in the vhost sets memory_limit 40M and display_errors off.
    php_site.dir(php_site.a, "admin", WRAPPER + "php_value memory_limit 1G\nphp_flag display_errors on\n"
                 "php_value max_input_vars 3333\n")
    php_site.dir(php_site.a, "admin/sub", "php_value memory_limit 2G\n")
    for path in ("/admin/ini.php", "/admin/sub/ini.php"):
        j = ini(apache, SITE, path, "memory_limit", "display_errors", "max_input_vars")
        assert j["ini"] == {"memory_limit": "40M", "display_errors": "0", "max_input_vars": "3333"}, path


def test_engine_off_serves_php_files_unexecuted_as_mod_php_does(apache, php_site):
    php_site.dir(php_site.a, "uploads", WRAPPER)
    php_site.dir(php_site.a, "uploads/files", "php_flag engine off\n")
    r = apache.get("/uploads/files/ini.php", host=SITE)
    assert r.status == 200 and r.body.startswith(b"<?php"), f"php ran (or no file) despite engine off: {r}"
    assert ini(apache, SITE, "/uploads/ini.php")["uid"] == php_site.a.uid


# ---------------------------------------------------------------- refusals


def test_php_admin_value_in_htaccess_is_500(apache, php_site):
    # httpd itself refuses it (as under mod_php): "<file>: php_admin_value not allowed here".
    for directive, line in (("php_admin_value", "memory_limit 1G"), ("php_admin_flag", "display_errors on")):
        d = php_site.dir(php_site.a, f"{directive}_in_htaccess", WRAPPER + f"{directive} {line}\n")
        mark = apache.log_mark()
        r = apache.get(f"/{d.name}/ini.php", host=SITE)
        assert r.status == 500, f"{directive} in .htaccess: expected 500, got {r}"
        apache.wait_log(mark, lambda t: f"{d}/.htaccess: {directive} not allowed here" in t,
                        f"'{directive} not allowed here' naming the file")


@pytest.mark.parametrize("name, value", [("open_basedir", "/"), ("disable_functions", "none"),
                                         ("extension", "/tmp/x.so"), ("cgi.fix_pathinfo", "0")])
def test_builtin_forbidden_name_is_500_and_logged(apache, php_site, name, value):
    d = php_site.dir(php_site.a, f"forbidden_{name.replace('.', '_')}",
                     WRAPPER + f"php_value {name} {value}\n")
    refused(apache, SITE, f"/{d.name}/ini.php", d / ".htaccess", 3, (f"'{name}' is not allowed",))


def test_forbidden_name_in_wrapper_arguments_is_500(apache, php_site):
    d = php_site.dir(php_site.a, "forbidden_wrapper_arg",
                     f"SuFcgiWrapper {PHP_CGI} -d open_basedir=/ .php\n")
    refused(apache, SITE, "/forbidden_wrapper_arg/ini.php", d / ".htaccess", 1, ("open_basedir",))


def test_host_forbidden_names_are_500_in_that_vhost(apache, php_site):
    c = php_site.c
    d = php_site.dir(c, "prepend", WRAPPER + "php_value auto_prepend_file /dev/null\n")
    refused(apache, FORBID, "/prepend/ini.php", d / ".htaccess", 3, ("'auto_prepend_file' is not allowed",))
    d = php_site.dir(c, "session", WRAPPER + "\nphp_value session.save_path /tmp\n")
    refused(apache, FORBID, "/session/ini.php", d / ".htaccess", 4, ("'session.save_path' is not allowed",))
    # Allowed by default elsewhere (documented): the same line works in another vhost.
    ok = php_site.dir(php_site.a, "prepend_ok", WRAPPER + "php_value auto_prepend_file prepend.php\n")
    put(ok / "prepend.php", "<?php header('X-Prepended: yes');\n", php_site.a.ids)
    r = apache.get("/prepend_ok/ini.php?n=auto_prepend_file", host=SITE)
    assert r.status == 200 and r.header("X-Prepended") == "yes", f"{r}{log_of(apache)}"
    assert r.json()["ini"]["auto_prepend_file"] == "prepend.php"


MALFORMED = {
    "missing_value": ("php_value memory_limit", ("two arguments",)),
    "empty_value": ('php_value memory_limit ""', ("two arguments",)),  # as mod_php: use none
    "name_with_space": ('php_value "memory limit" 1G', ("not a PHP setting name",)),
    "name_with_equals": ("php_value memory_limit=1G 2G", ("not a PHP setting name",)),
    "flag_not_on_off": ("php_flag display_errors maybe", ("on or off",)),
    "too_many_words": ("php_value error_reporting E_ALL & ~E_NOTICE", ("two arguments",)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_line_is_500_with_file_line_and_reason(apache, php_site, case):
    line, reasons = MALFORMED[case]
    d = php_site.dir(php_site.a, f"malformed_{case}", WRAPPER + "\n" + line + "\n")
    refused(apache, SITE, f"/{d.name}/ini.php", d / ".htaccess", 4, reasons)


# ---------------------------------------------------------------- a real-world .htaccess


WP_HTACCESS = f"""# BEGIN sufcgi
SuFcgiWrapper {PHP_CGI} .php
SuFcgiMaxWorkers 1
# END sufcgi
php_value upload_max_filesize 64M
php_value post_max_size 64M
php_value max_execution_time 300
php_flag display_errors Off

DirectoryIndex index.php index.html

# BEGIN WordPress
<IfModule mod_rewrite.c>
RewriteEngine On
RewriteBase /
RewriteRule ^index\\.php$ - [L]
RewriteCond %{{REQUEST_FILENAME}} !-f
RewriteCond %{{REQUEST_FILENAME}} !-d
RewriteRule . /index.php [L]
</IfModule>
# END WordPress
"""


def test_wordpress_style_htaccess_serves_index_php_for_pretty_url_with_the_values(apache, php_site):
    b = php_site.b
    put(b.www / ".htaccess", WP_HTACCESS, b.ids)
    put(b.www / "index.php", INI_PHP, b.ids)
    put(b.www / "readme.html", "static readme\n", b.ids)
    j = ini(apache, WP, "/2024/01/hello-world/", "upload_max_filesize", "post_max_size",
            "max_execution_time", "display_errors")
    assert j["uid"] == b.uid
    assert j["script"] == str(b.www / "index.php")
    assert j["uri"].startswith("/2024/01/hello-world/")
    assert j["ini"] == {"upload_max_filesize": "64M", "post_max_size": "64M",
                        "max_execution_time": "300", "display_errors": "0"}
    r = apache.get("/readme.html", host=WP)
    assert r.status == 200 and r.body == b"static readme\n", "existing files are not rewritten"
    assert ini(apache, WP, "/", "upload_max_filesize")["ini"]["upload_max_filesize"] == "64M"


def test_php_value_needs_allowoverride_options_as_under_mod_php(apache, php_site):
    c = php_site.c
    php_site.dir(c, "wrapper_only", WRAPPER)
    assert ini(apache, FILEINFO, "/wrapper_only/ini.php")["uid"] == c.uid, "SuFcgiWrapper needs FileInfo only"
    d = php_site.dir(c, "needs_options", WRAPPER + "php_value memory_limit 90M\n")
    mark = apache.log_mark()
    r = apache.get("/needs_options/ini.php", host=FILEINFO)
    assert r.status == 500, f"php_value without AllowOverride Options: expected 500, got {r}"
    apache.wait_log(mark, lambda t: f"{d}/.htaccess: php_value not allowed here" in t, "'not allowed here'")
    assert ini(apache, FORBID, "/needs_options/ini.php", "memory_limit")["ini"]["memory_limit"] == "90M"
