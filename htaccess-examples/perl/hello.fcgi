#!/usr/bin/perl
# A persistent Perl FastCGI app (FCGI module; Debian: libfcgi-perl).
use strict;
use warnings;
use FCGI;

my $request = FCGI::Request();
my $count = 0;
while ($request->Accept() >= 0) {
    $count++;
    my $user = getpwuid($<);
    print "Content-Type: text/plain\r\n\r\n";
    print "Hello from Perl, running as $user (uid $<)\n";
    print "this worker (pid $$) has served $count request(s)\n";
}
