#!/usr/bin/perl
# FastCGI test app (Perl FCGI on fd 0): JSON with uid/gid and the CGI environment.
use strict;
use warnings;
use FCGI;
use JSON::PP;

my %env;
my $req = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%env);
my $json = JSON::PP->new->canonical(1);
while ($req->Accept() >= 0) {
    my ($gid) = split / /, $(;
    my @groups = split / /, $);
    shift @groups;    # first element of $) is the effective gid
    my $out = $json->encode({
        app    => "perl",
        uid    => $< + 0,
        gid    => $gid + 0,
        euid   => $> + 0,
        groups => [map { $_ + 0 } @groups],
        pid    => $$ + 0,
        env    => {%env},
    });
    print "Content-Type: application/json\r\n\r\n", $out;
}
