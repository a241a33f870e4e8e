//! Who a pool runs as, and whether its files may be run as that user.
//!
//! The supervisor (root) decides the identity from its own host config and
//! the filesystem, never from what a child claims. All file checks use lstat
//! data; the rules are pure functions over `FileStat` so they are testable
//! with synthetic data, and the filesystem / passwd access goes through the
//! small `FsView` / `Accounts` traits.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::hostconfig::{HostConfig, VhostConfig};
use super::limits::Limits;
use super::request::{AppKind, PoolSpec};
use super::sys::{self, FileStat, Passwd};

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const GROUP_OTHER_WRITE: u32 = 0o022;
const OWNER_EXEC: u32 = 0o100;
const ANY_EXEC: u32 = 0o111;

/// Why nothing was spawned: the HTTP status for the child and a log reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Refusal {
        Refusal { status, reason: reason.into() }
    }
    pub fn forbidden(reason: impl Into<String>) -> Refusal {
        Refusal::new(403, reason)
    }
}

/// The resolved identity of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Login name (for supplementary groups, USER, LOGNAME).
    pub name: Vec<u8>,
    /// Home directory from passwd (for HOME).
    pub home: Vec<u8>,
}

/// The passwd database.
pub trait Accounts {
    fn by_name(&self, name: &[u8]) -> io::Result<Option<Passwd>>;
    fn by_uid(&self, uid: u32) -> io::Result<Option<Passwd>>;
}

/// The filesystem as the checks see it.
pub trait FsView {
    fn lstat(&self, path: &Path) -> io::Result<FileStat>;
    fn realpath(&self, path: &Path) -> io::Result<PathBuf>;
}

/// The real system: libc passwd lookups and syscalls.
pub struct System;

impl Accounts for System {
    fn by_name(&self, name: &[u8]) -> io::Result<Option<Passwd>> {
        sys::getpwnam(name)
    }
    fn by_uid(&self, uid: u32) -> io::Result<Option<Passwd>> {
        sys::getpwuid(uid)
    }
}

impl FsView for System {
    fn lstat(&self, path: &Path) -> io::Result<FileStat> {
        sys::lstat(path)
    }
    fn realpath(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }
}

/// An absolute path with no `.`/`..` components (so component-wise
/// containment checks cannot be fooled).
pub fn is_normal_absolute(p: &Path) -> bool {
    if !p.is_absolute() {
        return false;
    }
    let bytes = sys::path_bytes(p);
    // Path::components() silently drops "." and repeated slashes; inspect raw segments.
    !bytes.split(|&b| b == b'/').any(|seg| seg == b"." || seg == b"..")
}

/// Whether `p` lies inside `base`, comparing whole components
/// (`/home/a/www2` is not inside `/home/a/www`). Both must be normal absolute paths.
pub fn path_within(base: &Path, p: &Path) -> bool {
    if !is_normal_absolute(base) || !is_normal_absolute(p) {
        return false;
    }
    let mut pc = p.components();
    for b in base.components() {
        if matches!(b, Component::RootDir) {
            if pc.next() != Some(Component::RootDir) {
                return false;
            }
            continue;
        }
        match pc.next() {
            Some(c) if c == b => {}
            _ => return false,
        }
    }
    // Strictly inside: something must remain.
    pc.next().is_some()
}

fn perm_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// App/Script rules for the program file itself.
pub fn check_program_stat(path: &Path, st: &FileStat, uid: u32) -> Result<(), String> {
    let p = path.display();
    if st.is_symlink() {
        return Err(format!("{p} is a symlink"));
    }
    if !st.is_file() {
        return Err(format!("{p} is not a regular file"));
    }
    if st.uid != uid {
        return Err(format!("{p} is owned by uid {} instead of {uid}", st.uid));
    }
    if st.mode & GROUP_OTHER_WRITE != 0 {
        return Err(format!("{p} is writable by group or others (mode {})", perm_text(st.mode)));
    }
    if st.mode & (S_ISUID | S_ISGID) != 0 {
        return Err(format!("{p} is setuid or setgid (mode {})", perm_text(st.mode)));
    }
    if st.nlink != 1 {
        return Err(format!("{p} has {} hard links (must be 1)", st.nlink));
    }
    if st.mode & OWNER_EXEC == 0 {
        return Err(format!("{p} is not executable by its owner (mode {})", perm_text(st.mode)));
    }
    Ok(())
}

/// Rules for the program's directory and the working directory.
pub fn check_dir_stat(path: &Path, st: &FileStat, uid: u32) -> Result<(), String> {
    let p = path.display();
    if st.is_symlink() {
        return Err(format!("directory {p} is a symlink"));
    }
    if !st.is_dir() {
        return Err(format!("{p} is not a directory"));
    }
    if st.uid != uid {
        return Err(format!("directory {p} is owned by uid {} instead of {uid}", st.uid));
    }
    if st.mode & GROUP_OTHER_WRITE != 0 {
        return Err(format!("directory {p} is writable by group or others (mode {})", perm_text(st.mode)));
    }
    Ok(())
}

/// Rules for each `.htaccess` that configured the pool.
pub fn check_config_stat(path: &Path, st: &FileStat, uid: u32) -> Result<(), String> {
    let p = path.display();
    if st.is_symlink() {
        return Err(format!("config file {p} is a symlink"));
    }
    if !st.is_file() {
        return Err(format!("config file {p} is not a regular file"));
    }
    if st.uid != uid {
        return Err(format!("config file {p} is owned by uid {} instead of {uid}", st.uid));
    }
    if st.mode & GROUP_OTHER_WRITE != 0 {
        return Err(format!("config file {p} is writable by group or others (mode {})", perm_text(st.mode)));
    }
    Ok(())
}

/// Rules for a root-owned wrapper command (already resolved with realpath).
pub fn check_root_wrapper_stat(path: &Path, st: &FileStat) -> Result<(), String> {
    let p = path.display();
    if !st.is_file() {
        return Err(format!("wrapper {p} is not a regular file"));
    }
    if st.uid != 0 {
        return Err(format!("wrapper {p} is not owned by root"));
    }
    if st.mode & GROUP_OTHER_WRITE != 0 {
        return Err(format!("wrapper {p} is writable by group or others (mode {})", perm_text(st.mode)));
    }
    if st.mode & (S_ISUID | S_ISGID) != 0 {
        return Err(format!("wrapper {p} is setuid or setgid (mode {})", perm_text(st.mode)));
    }
    if st.mode & ANY_EXEC == 0 {
        return Err(format!("wrapper {p} is not executable (mode {})", perm_text(st.mode)));
    }
    Ok(())
}

/// Rules for the directory holding a root-owned wrapper.
pub fn check_root_dir_stat(path: &Path, st: &FileStat) -> Result<(), String> {
    let p = path.display();
    if !st.is_dir() {
        return Err(format!("{p} is not a directory"));
    }
    if st.uid != 0 {
        return Err(format!("wrapper directory {p} is not owned by root"));
    }
    if st.mode & GROUP_OTHER_WRITE != 0 {
        return Err(format!("wrapper directory {p} is writable by group or others (mode {})", perm_text(st.mode)));
    }
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub fn is_env_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

/// Re-validates `SuFcgiEnv` pairs against the host's rules.
pub fn validate_env(cfg: &HostConfig, env: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    for (name, value) in env {
        let shown = String::from_utf8_lossy(name);
        if !is_env_name(name) {
            return Err(format!("invalid environment variable name {shown:?}"));
        }
        if !cfg.env_allowed(name) {
            return Err(format!("environment variable {shown} may not be set"));
        }
        if value.contains(&0) {
            return Err(format!("environment variable {shown} contains a NUL byte"));
        }
    }
    Ok(())
}


/// uid/gid floors: never root, never below the host's minimums.
pub fn check_ids(cfg: &HostConfig, uid: u32, gid: u32) -> Result<(), Refusal> {
    if uid == 0 {
        return Err(Refusal::forbidden("refusing to run a pool as uid 0"));
    }
    if gid == 0 {
        return Err(Refusal::forbidden("refusing to run a pool as gid 0"));
    }
    if uid < cfg.min_uid {
        return Err(Refusal::forbidden(format!("uid {uid} is below SuFcgiMinUid {}", cfg.min_uid)));
    }
    if gid < cfg.min_gid {
        return Err(Refusal::forbidden(format!("gid {gid} is below SuFcgiMinGid {}", cfg.min_gid)));
    }
    Ok(())
}

fn lookup_failed(what: &str, e: io::Error) -> Refusal {
    Refusal::new(500, format!("passwd lookup of {what} failed: {e}"))
}

/// A script served through a wrapper runs with the pool owner's rights, so it
/// must be the owner's (`uid`) own regular file that nobody else can change
/// or replace: nobody else may write the file, nor any directory from the
/// script's own up to `config_dir` (the directory whose configuration wrapped
/// it), where another user could rename a file of theirs into its place (as
/// suEXEC and suPHP refuse). Checked by the server glue on each request (the
/// wrapper's pool is shared by all of the owner's scripts).
pub fn check_wrapped_script(file: &Path, config_dir: &Path, uid: u32) -> Result<(), String> {
    check_wrapped_script_in(&System, file, config_dir, uid)
}

/// A script a wrapper serves, and the directory whose configuration wrapped
/// it: what `check_wrapped_script` needs, as both servers' glue keep it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrappedScript {
    pub file: PathBuf,
    pub config_dir: PathBuf,
}

impl WrappedScript {
    pub fn new(file: PathBuf, w: &super::directives::Wrapper) -> WrappedScript {
        let config_dir = w.config_dir_for(&file);
        WrappedScript { file, config_dir }
    }

    /// `check_wrapped_script` for a pool of `uid`.
    pub fn check(&self, uid: u32) -> Result<(), String> {
        check_wrapped_script(&self.file, &self.config_dir, uid)
    }
}

fn check_wrapped_script_in(fs: &dyn FsView, file: &Path, config_dir: &Path, uid: u32) -> Result<(), String> {
    let shown = file.display();
    let st = fs.lstat(file).map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !st.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if st.uid != uid {
        return Err(format!("{shown} is owned by uid {}, not by the site owner (uid {uid})", st.uid));
    }
    if st.mode & GROUP_OTHER_WRITE != 0 {
        return Err(format!("{shown} is writable by group or others (mode {})", perm_text(st.mode)));
    }
    if st.mode & (S_ISUID | S_ISGID) != 0 {
        return Err(format!("{shown} is setuid or setgid (mode {})", perm_text(st.mode)));
    }
    for dir in script_dirs(file, config_dir) {
        let mut dst = fs.lstat(dir).map_err(|e| format!("cannot stat directory {}: {e}", dir.display()))?;
        let mut named = dir.to_path_buf();
        if dst.is_symlink() {
            // A symlinked directory (a deployment's `current -> releases/5`)
            // is judged by the directory it names: that is where files are.
            named = fs.realpath(dir).map_err(|e| format!("cannot resolve directory {}: {e}", dir.display()))?;
            dst = fs.lstat(&named).map_err(|e| format!("cannot stat directory {}: {e}", named.display()))?;
        }
        check_dir_stat(&named, &dst, uid)?;
    }
    Ok(())
}

/// The directories whose writers could put another file in `file`'s place:
/// its own and each one above it up to `config_dir` (only its own when it
/// is not below `config_dir`, e.g. a wrapper set for a `<Location>`).
fn script_dirs<'a>(file: &'a Path, config_dir: &Path) -> Vec<&'a Path> {
    let mut dirs: Vec<&Path> = file.parent().into_iter().collect();
    if path_within(config_dir, file) {
        while let Some(d) = dirs.last().copied().filter(|d| *d != config_dir).and_then(Path::parent) {
            dirs.push(d);
        }
    }
    dirs
}

/// Decides the identity of a pool: `SuFcgiOwner`, else the `~user` of a userdir
/// request (only for programs inside that user's home), else the owner of the
/// vhost's DocumentRoot with that user's primary group. Applies the id floors.
pub fn resolve_owner(
    cfg: &HostConfig,
    vhost: &VhostConfig,
    spec: &PoolSpec,
    accounts: &dyn Accounts,
    fs: &dyn FsView,
) -> Result<Owner, Refusal> {
    let owner = if let Some((uid, gid)) = vhost.owner {
        let pw = accounts
            .by_uid(uid)
            .map_err(|e| lookup_failed(&format!("uid {uid}"), e))?
            .ok_or_else(|| Refusal::forbidden(format!("SuFcgiOwner uid {uid} of {} has no passwd entry", vhost.name)))?;
        Owner { uid, gid, name: pw.name, home: pw.home }
    } else if let Some(user) = &spec.userdir_user {
        let shown = String::from_utf8_lossy(user).into_owned();
        let pw = accounts
            .by_name(user)
            .map_err(|e| lookup_failed(&format!("user {shown}"), e))?
            .ok_or_else(|| Refusal::forbidden(format!("userdir user {shown} has no passwd entry")))?;
        let home = sys::path_from_bytes(&pw.home);
        if !path_within(home, &spec.program) {
            return Err(Refusal::forbidden(format!(
                "{} is not inside the home directory {} of userdir user {shown}",
                spec.program.display(),
                home.display()
            )));
        }
        Owner { uid: pw.uid, gid: pw.gid, name: pw.name, home: pw.home }
    } else {
        let root = &vhost.document_root;
        let st = fs
            .lstat(root)
            .map_err(|e| Refusal::forbidden(format!("cannot lstat DocumentRoot {}: {e}", root.display())))?;
        let pw = accounts
            .by_uid(st.uid)
            .map_err(|e| lookup_failed(&format!("uid {}", st.uid), e))?
            .ok_or_else(|| {
                Refusal::forbidden(format!("owner uid {} of DocumentRoot {} has no passwd entry", st.uid, root.display()))
            })?;
        Owner { uid: pw.uid, gid: pw.gid, name: pw.name, home: pw.home }
    };
    check_ids(cfg, owner.uid, owner.gid)?;
    Ok(owner)
}

/// What the checks established about a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The path to execute (the realpath of a wrapper; the program itself otherwise).
    pub program: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Changes whenever the program, a configuring file or the restart file
    /// is modified: part of the pool key, so an edit means fresh workers.
    pub version: u64,
    /// The spec's limits clamped to the host's ceilings.
    pub limits: Limits,
}

fn stat_of(fs: &dyn FsView, path: &Path, what: &str) -> Result<FileStat, Refusal> {
    fs.lstat(path).map_err(|e| Refusal::forbidden(format!("cannot lstat {what} {}: {e}", path.display())))
}

fn parent_of(path: &Path) -> Result<&Path, Refusal> {
    path.parent().ok_or_else(|| Refusal::forbidden(format!("{} has no parent directory", path.display())))
}

fn require_normal(path: &Path, what: &str) -> Result<(), Refusal> {
    if is_normal_absolute(path) {
        Ok(())
    } else {
        Err(Refusal::forbidden(format!("{what} {} is not a normalized absolute path", path.display())))
    }
}

fn check_user_program(fs: &dyn FsView, program: &Path, uid: u32) -> Result<FileStat, Refusal> {
    let st = stat_of(fs, program, "program")?;
    check_program_stat(program, &st, uid).map_err(Refusal::forbidden)?;
    let dir = parent_of(program)?;
    let dst = stat_of(fs, dir, "directory")?;
    check_dir_stat(dir, &dst, uid).map_err(Refusal::forbidden)?;
    Ok(st)
}

/// Every file rule for `spec` run as `owner`, plus env validation and clamping.
pub fn check_spec(cfg: &HostConfig, spec: &PoolSpec, owner: &Owner, fs: &dyn FsView) -> Result<Checked, Refusal> {
    let uid = owner.uid;
    require_normal(&spec.program, "program")?;
    require_normal(&spec.workdir, "working directory")?;
    for a in &spec.args {
        if a.contains(&0) {
            return Err(Refusal::forbidden("an argument contains a NUL byte"));
        }
    }
    validate_env(cfg, &spec.env).map_err(Refusal::forbidden)?;

    let (program, st) = match spec.kind {
        AppKind::App | AppKind::Script | AppKind::Authorizer => {
            let st = check_user_program(fs, &spec.program, uid)?;
            (spec.program.clone(), st)
        }
        AppKind::Wrapper => {
            let resolved = fs.realpath(&spec.program).map_err(|e| {
                Refusal::forbidden(format!("cannot resolve wrapper {}: {e}", spec.program.display()))
            })?;
            let st = stat_of(fs, &resolved, "wrapper")?;
            if st.uid == 0 {
                check_root_wrapper_stat(&resolved, &st).map_err(Refusal::forbidden)?;
                let dir = parent_of(&resolved)?;
                let dst = stat_of(fs, dir, "directory")?;
                check_root_dir_stat(dir, &dst).map_err(Refusal::forbidden)?;
            } else if st.uid == uid {
                check_user_program(fs, &resolved, uid)?;
            } else {
                return Err(Refusal::forbidden(format!(
                    "wrapper {} is owned by uid {}, neither root nor the pool owner {uid}",
                    resolved.display(),
                    st.uid
                )));
            }
            (resolved, st)
        }
    };

    let wst = stat_of(fs, &spec.workdir, "working directory")?;
    check_dir_stat(&spec.workdir, &wst, uid).map_err(Refusal::forbidden)?;

    for cf in &spec.config_files {
        require_normal(cf, "config file")?;
        let cst = stat_of(fs, cf, "config file")?;
        check_config_stat(cf, &cst, uid).map_err(Refusal::forbidden)?;
    }

    let mut version = VersionHasher::default();
    version.add(st.dev as i64).add(st.ino as i64).add(st.mtime_ns);
    for cf in &spec.config_files {
        version.add(fs.lstat(cf).map(|s| s.mtime_ns).unwrap_or(0));
    }
    // (`SuFcgiLog` is not checked here: it is opened as the owner, so any
    // path the owner could write is fine; see supervisor::customer_log.)
    if let Some(rf) = &spec.restart_file {
        require_normal(rf, "restart file")?;
    }
    if let Some(rf) = &spec.restart_file {
        // A missing restart file is the normal case: version 0.
        version.add(fs.lstat(rf).map(|s| s.mtime_ns).unwrap_or(0));
    }
    Ok(Checked { program, dev: st.dev, ino: st.ino, version: version.0, limits: spec.limits.clamp(&cfg.ceilings) })
}

/// FNV-1a over the i64s that make up a pool's version: stable across runs
/// (children and the supervisor need not agree on it, only the supervisor
/// with itself).
struct VersionHasher(u64);

impl Default for VersionHasher {
    fn default() -> Self {
        VersionHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl VersionHasher {
    fn add(&mut self, v: i64) -> &mut Self {
        for b in v.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

#[cfg(test)]
#[allow(clippy::unnecessary_cast)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const REG: u32 = libc::S_IFREG as u32;
    const DIR: u32 = libc::S_IFDIR as u32;
    const LNK: u32 = libc::S_IFLNK as u32;

    fn st(kind: u32, perm: u32, uid: u32) -> FileStat {
        FileStat { dev: 1, ino: 42, mode: kind | perm, uid, gid: uid, nlink: if kind == DIR { 2 } else { 1 }, size: 0, mtime_ns: 0 }
    }

    #[derive(Default)]
    struct Fake {
        files: HashMap<PathBuf, FileStat>,
        links: HashMap<PathBuf, PathBuf>,
        users: Vec<Passwd>,
    }

    impl Fake {
        fn add(&mut self, p: &str, s: FileStat) {
            self.files.insert(PathBuf::from(p), s);
        }
        fn user(&mut self, name: &str, uid: u32, gid: u32, home: &str) {
            self.users.push(Passwd { name: name.into(), uid, gid, home: home.into() });
        }
    }

    impl FsView for Fake {
        fn lstat(&self, p: &Path) -> io::Result<FileStat> {
            self.files.get(p).copied().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn realpath(&self, p: &Path) -> io::Result<PathBuf> {
            Ok(self.links.get(p).cloned().unwrap_or_else(|| p.to_path_buf()))
        }
    }

    impl Accounts for Fake {
        fn by_name(&self, name: &[u8]) -> io::Result<Option<Passwd>> {
            Ok(self.users.iter().find(|u| u.name == name).cloned())
        }
        fn by_uid(&self, uid: u32) -> io::Result<Option<Passwd>> {
            Ok(self.users.iter().find(|u| u.uid == uid).cloned())
        }
    }

    fn cfg() -> HostConfig {
        let mut c = HostConfig::new("/run/sufcgi".into(), 33, 33);
        c.vhosts.push(VhostConfig::new("a.example:80".into(), None, "/home/a/www".into()));
        c
    }

    fn spec(kind: AppKind, program: &str, workdir: &str) -> PoolSpec {
        PoolSpec {
            generation: 0,
            vhost: 0,
            kind,
            program: program.into(),
            args: vec![],
            workdir: workdir.into(),
            config_files: vec![PathBuf::from("/home/a/www/.htaccess")],
            env: vec![(b"APP_MODE".to_vec(), b"prod".to_vec())],
            limits: Limits { max_workers: 4, ..Limits::DEFAULT },
            restart_file: None,
            log_file: None,
            userdir_user: None,
        }
    }

    fn world() -> Fake {
        let mut f = Fake::default();
        f.user("a", 1001, 1001, "/home/a");
        f.user("b", 1002, 1002, "/home/b");
        f.add("/home/a/www", st(DIR, 0o755, 1001));
        f.add("/home/a/www/app.py", st(REG, 0o755, 1001));
        f.add("/home/a/www/.htaccess", st(REG, 0o644, 1001));
        f.add("/usr/bin", st(DIR, 0o755, 0));
        f.add("/usr/bin/php-cgi8.2", st(REG, 0o755, 0));
        f.links.insert("/usr/bin/php-cgi".into(), "/usr/bin/php-cgi8.2".into());
        f
    }

    #[test]
    fn a_wrapped_script_needs_every_directory_up_to_its_configuration_to_be_the_owners_alone() {
        let mut f = world();
        f.add("/home/a/www/blog", st(DIR, 0o755, 1001));
        f.add("/home/a/www/blog/index.php", st(REG, 0o644, 1001));
        f.add("/home/a/www/blog/up", st(DIR, 0o777, 1001));
        f.add("/home/a/www/blog/up/evil.php", st(REG, 0o644, 1002));
        f.add("/home/a/www/blog/up/mine.php", st(REG, 0o644, 1001));
        let www = Path::new("/home/a/www");
        let check = |file: &str| check_wrapped_script_in(&f, Path::new(file), www, 1001);
        assert_eq!(check("/home/a/www/blog/index.php"), Ok(()));
        // Another user's file renamed into a world-writable directory, and
        // the owner's own file there: both refused, naming the directory.
        assert!(check("/home/a/www/blog/up/evil.php").unwrap_err().contains("owned by uid 1002"));
        let why = check("/home/a/www/blog/up/mine.php").unwrap_err();
        assert!(why.contains("directory /home/a/www/blog/up is writable by group or others (mode 0777)"), "{why}");
        // Group-writable further up (but below the configuring directory) is refused too.
        f.add("/home/a/www/blog", st(DIR, 0o775, 1001));
        let check = |file: &str| check_wrapped_script_in(&f, Path::new(file), www, 1001);
        assert!(check("/home/a/www/blog/index.php").unwrap_err().contains("directory /home/a/www/blog is writable"));
        // Above the configuring directory is the host's business, not checked here.
        f.add("/home/a/www/blog", st(DIR, 0o755, 1001));
        f.add("/home/a", st(DIR, 0o777, 1001));
        assert_eq!(check_wrapped_script_in(&f, Path::new("/home/a/www/blog/index.php"), www, 1001), Ok(()));
        // The configuring directory itself is checked.
        f.add("/home/a/www", st(DIR, 0o757, 1001));
        assert!(check_wrapped_script_in(&f, Path::new("/home/a/www/x.php"), www, 1001).is_err());
    }

    #[test]
    fn a_symlinked_directory_of_a_wrapped_script_is_judged_by_its_target() {
        let mut f = world();
        f.add("/home/a/www/current", st(LNK, 0o777, 1001));
        f.links.insert("/home/a/www/current".into(), "/home/a/releases/5".into());
        f.add("/home/a/releases/5", st(DIR, 0o755, 1001));
        f.add("/home/a/www/current/index.php", st(REG, 0o644, 1001));
        let www = Path::new("/home/a/www");
        assert_eq!(check_wrapped_script_in(&f, Path::new("/home/a/www/current/index.php"), www, 1001), Ok(()));
        f.add("/home/a/releases/5", st(DIR, 0o777, 1001));
        let why = check_wrapped_script_in(&f, Path::new("/home/a/www/current/index.php"), www, 1001).unwrap_err();
        assert!(why.contains("directory /home/a/releases/5 is writable"), "{why}");
        f.links.insert("/home/a/www/current".into(), "/home/b/www".into());
        f.add("/home/b/www", st(DIR, 0o755, 1002));
        assert!(check_wrapped_script_in(&f, Path::new("/home/a/www/current/index.php"), www, 1001).unwrap_err().contains("owned by uid 1002"));
    }

    #[test]
    fn a_wrapped_script_outside_its_configuring_directory_has_only_its_own_checked() {
        let mut f = world();
        f.add("/srv/aliased", st(DIR, 0o755, 1001));
        f.add("/srv/aliased/x.php", st(REG, 0o644, 1001));
        f.add("/srv", st(DIR, 0o777, 0));
        assert_eq!(check_wrapped_script_in(&f, Path::new("/srv/aliased/x.php"), Path::new("/home/a/www"), 1001), Ok(()));
        f.add("/srv/aliased", st(DIR, 0o775, 1001));
        assert!(check_wrapped_script_in(&f, Path::new("/srv/aliased/x.php"), Path::new("/home/a/www"), 1001).is_err());
    }

    #[test]
    fn program_rules() {
        let p = Path::new("/x/app");
        assert!(check_program_stat(p, &st(REG, 0o755, 7), 7).is_ok());
        assert!(check_program_stat(p, &st(REG, 0o755, 8), 7).unwrap_err().contains("owned by uid 8 instead of 7"));
        assert!(check_program_stat(p, &st(REG, 0o775, 7), 7).unwrap_err().contains("writable by group"));
        assert!(check_program_stat(p, &st(REG, 0o757, 7), 7).unwrap_err().contains("writable by group or others"));
        assert!(check_program_stat(p, &st(LNK, 0o777, 7), 7).unwrap_err().contains("symlink"));
        assert!(check_program_stat(p, &st(REG, 0o4755, 7), 7).unwrap_err().contains("setuid"));
        assert!(check_program_stat(p, &st(REG, 0o2755, 7), 7).unwrap_err().contains("setgid"));
        assert!(check_program_stat(p, &st(REG, 0o644, 7), 7).unwrap_err().contains("not executable"));
        assert!(check_program_stat(p, &st(DIR, 0o755, 7), 7).unwrap_err().contains("not a regular file"));
        let mut linked = st(REG, 0o755, 7);
        linked.nlink = 2;
        assert!(check_program_stat(p, &linked, 7).unwrap_err().contains("2 hard links"));
    }

    #[test]
    fn dir_and_config_rules() {
        let p = Path::new("/x");
        assert!(check_dir_stat(p, &st(DIR, 0o750, 7), 7).is_ok());
        assert!(check_dir_stat(p, &st(DIR, 0o770, 7), 7).is_err());
        assert!(check_dir_stat(p, &st(DIR, 0o755, 0), 7).unwrap_err().contains("owned by uid 0"));
        assert!(check_dir_stat(p, &st(LNK, 0o777, 7), 7).unwrap_err().contains("symlink"));
        assert!(check_dir_stat(p, &st(REG, 0o755, 7), 7).unwrap_err().contains("not a directory"));
        assert!(check_config_stat(p, &st(REG, 0o644, 7), 7).is_ok());
        assert!(check_config_stat(p, &st(REG, 0o664, 7), 7).is_err());
        assert!(check_config_stat(p, &st(REG, 0o644, 8), 7).is_err());
        assert!(check_config_stat(p, &st(LNK, 0o644, 7), 7).is_err());
        assert!(check_root_wrapper_stat(p, &st(REG, 0o755, 0)).is_ok());
        assert!(check_root_wrapper_stat(p, &st(REG, 0o775, 0)).is_err());
        assert!(check_root_wrapper_stat(p, &st(REG, 0o4755, 0)).is_err());
        assert!(check_root_wrapper_stat(p, &st(REG, 0o755, 5)).is_err());
        assert!(check_root_dir_stat(p, &st(DIR, 0o1777, 0)).is_err());
    }

    #[test]
    fn containment_is_by_component() {
        assert!(path_within(Path::new("/home/a/www"), Path::new("/home/a/www/app.py")));
        assert!(!path_within(Path::new("/home/a/www"), Path::new("/home/a/www2/app.py")));
        assert!(!path_within(Path::new("/home/a/www"), Path::new("/home/a/www")));
        assert!(!path_within(Path::new("/home/a"), Path::new("/home/a/../b/app")));
        assert!(!path_within(Path::new("/home/a"), Path::new("home/a/app")));
        assert!(path_within(Path::new("/home/a/"), Path::new("/home/a/x")));
        assert!(!is_normal_absolute(Path::new("/a/./b")));
        assert!(is_normal_absolute(Path::new("/a/b")));
    }

    #[test]
    fn env_validation_and_clamp() {
        let c = cfg();
        assert!(validate_env(&c, &[(b"FOO_1".to_vec(), b"x".to_vec())]).is_ok());
        assert!(validate_env(&c, &[(b"1FOO".to_vec(), b"x".to_vec())]).is_err());
        assert!(validate_env(&c, &[(b"A-B".to_vec(), b"x".to_vec())]).is_err());
        assert!(validate_env(&c, &[(b"".to_vec(), b"x".to_vec())]).is_err());
        assert!(validate_env(&c, &[(b"LD_PRELOAD".to_vec(), b"x".to_vec())]).unwrap_err().contains("may not be set"));
        assert!(validate_env(&c, &[(b"PHPRC".to_vec(), b"x".to_vec())]).is_err());
        assert!(validate_env(&c, &[(b"X".to_vec(), b"a\0b".to_vec())]).unwrap_err().contains("NUL"));
    }

    #[test]
    fn owner_from_document_root() {
        let f = world();
        let c = cfg();
        let o = resolve_owner(&c, &c.vhosts[0], &spec(AppKind::App, "/home/a/www/app.py", "/home/a/www"), &f, &f).unwrap();
        assert_eq!((o.uid, o.gid, o.name.as_slice()), (1001, 1001, &b"a"[..]));
        let mut f2 = world();
        f2.add("/home/a/www", st(DIR, 0o755, 4242));
        let r = resolve_owner(&c, &c.vhosts[0], &spec(AppKind::App, "/home/a/www/app.py", "/home/a/www"), &f2, &f2);
        assert!(r.unwrap_err().reason.contains("no passwd entry"));
    }

    #[test]
    fn owner_floors_and_explicit_owner() {
        let mut f = world();
        f.user("root", 0, 0, "/root");
        f.user("low", 500, 500, "/home/low");
        let mut c = cfg();
        c.vhosts[0].owner = Some((0, 0));
        let s = spec(AppKind::App, "/home/a/www/app.py", "/home/a/www");
        assert!(resolve_owner(&c, &c.vhosts[0], &s, &f, &f).unwrap_err().reason.contains("uid 0"));
        c.vhosts[0].owner = Some((500, 500));
        assert!(resolve_owner(&c, &c.vhosts[0], &s, &f, &f).unwrap_err().reason.contains("SuFcgiMinUid"));
        c.vhosts[0].owner = Some((1002, 1002));
        assert_eq!(resolve_owner(&c, &c.vhosts[0], &s, &f, &f).unwrap().uid, 1002);
        c.vhosts[0].owner = Some((1002, 10));
        assert!(resolve_owner(&c, &c.vhosts[0], &s, &f, &f).unwrap_err().reason.contains("SuFcgiMinGid"));
    }

    #[test]
    fn userdir_owner_needs_program_in_home() {
        let f = world();
        let c = cfg();
        let mut s = spec(AppKind::App, "/home/b/public_html/app.py", "/home/b/public_html");
        s.userdir_user = Some(b"b".to_vec());
        assert_eq!(resolve_owner(&c, &c.vhosts[0], &s, &f, &f).unwrap().uid, 1002);
        s.program = "/home/bb/public_html/app.py".into();
        assert!(resolve_owner(&c, &c.vhosts[0], &s, &f, &f).unwrap_err().reason.contains("not inside the home"));
        s.userdir_user = Some(b"nobody-here".to_vec());
        assert!(resolve_owner(&c, &c.vhosts[0], &s, &f, &f).is_err());
    }

    #[test]
    fn spec_checks() {
        let f = world();
        let c = cfg();
        let o = resolve_owner(&c, &c.vhosts[0], &spec(AppKind::App, "/home/a/www/app.py", "/home/a/www"), &f, &f).unwrap();
        let ok = check_spec(&c, &spec(AppKind::App, "/home/a/www/app.py", "/home/a/www"), &o, &f).unwrap();
        assert_eq!((ok.ino, ok.limits.max_workers), (42, 4));

        // Wrapper: realpath'd, root-owned.
        let w = check_spec(&c, &spec(AppKind::Wrapper, "/usr/bin/php-cgi", "/home/a/www"), &o, &f).unwrap();
        assert_eq!(w.program, PathBuf::from("/usr/bin/php-cgi8.2"));

        // Wrapper owned by someone else.
        let mut f2 = world();
        f2.add("/usr/bin/php-cgi8.2", st(REG, 0o755, 1002));
        let r = check_spec(&c, &spec(AppKind::Wrapper, "/usr/bin/php-cgi", "/home/a/www"), &o, &f2).unwrap_err();
        assert!(r.reason.contains("neither root nor the pool owner"), "{}", r.reason);

        // Group-writable .htaccess.
        let mut f3 = world();
        f3.add("/home/a/www/.htaccess", st(REG, 0o664, 1001));
        assert!(check_spec(&c, &spec(AppKind::App, "/home/a/www/app.py", "/home/a/www"), &o, &f3)
            .unwrap_err()
            .reason
            .contains("config file"));

        // Program owned by root.
        let mut f4 = world();
        f4.add("/home/a/www/app.py", st(REG, 0o755, 0));
        let r = check_spec(&c, &spec(AppKind::Script, "/home/a/www/app.py", "/home/a/www"), &o, &f4).unwrap_err();
        assert_eq!(r.status, 403);

        // Missing workdir, dotted path, bad env.
        assert!(check_spec(&c, &spec(AppKind::App, "/home/a/www/app.py", "/home/a/nope"), &o, &f).is_err());
        assert!(check_spec(&c, &spec(AppKind::App, "/home/a/www/../www/app.py", "/home/a/www"), &o, &f).is_err());
        let mut s = spec(AppKind::App, "/home/a/www/app.py", "/home/a/www");
        s.env.push((b"LD_LIBRARY_PATH".to_vec(), b"/x".to_vec()));
        assert!(check_spec(&c, &s, &o, &f).is_err());
    }
}
