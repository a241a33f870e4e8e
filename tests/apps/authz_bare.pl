#!/usr/bin/perl
# A FastCGI AUTHORIZER (Perl FCGI) as the FastCGI spec's examples write one:
# "let it through" is a bare blank line, no header at all (lighttpd and
# mod_fcgid take that as 200). With QUERY_STRING "deny": 403.
use strict;
use warnings;
use FCGI;

my %env;
my $request = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%env);
while ($request->Accept() >= 0) {
    if (($env{QUERY_STRING} // '') =~ /deny/) {
        print "Status: 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nno\n";
    } else {
        print "\r\n";
    }
}
