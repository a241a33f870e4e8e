<?php
// Shows which account runs this script: with sufcgi it is the site owner, never www-data.
$user = posix_getpwuid(posix_getuid());
header('Content-Type: text/plain');
echo "Hello from PHP, running as {$user['name']} (uid " . posix_getuid() . ", gid " . posix_getgid() . ")\n";
echo "SCRIPT_FILENAME = {$_SERVER['SCRIPT_FILENAME']}\n";
echo "worker pid      = " . getmypid() . "\n";
echo "upload_max_filesize = " . ini_get('upload_max_filesize') . " (php_value in .htaccess)\n";
echo "display_errors      = " . var_export((bool)ini_get('display_errors'), true) . " (php_flag in .htaccess)\n";
