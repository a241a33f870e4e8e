<?php
// Reports the php-cgi process that served the request (PHP_FCGI_MAX_REQUESTS test).
header('Content-Type: text/plain');
echo getmypid(), "\n";
