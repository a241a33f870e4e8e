<?php
// FastCGI test app for the PHP wrapper: uid/gid and $_SERVER as JSON.
header('Content-Type: application/json');
$server = array();
foreach ($_SERVER as $k => $v) {
    if (is_string($v) || is_int($v) || is_float($v)) {
        $server[$k] = (string)$v;
    }
}
echo json_encode(array(
    'app' => 'php',
    'uid' => posix_getuid(),
    'gid' => posix_getgid(),
    'euid' => posix_geteuid(),
    'pid' => getmypid(),
    'env' => $server,
), JSON_UNESCAPED_SLASHES | JSON_PARTIAL_OUTPUT_ON_ERROR);
