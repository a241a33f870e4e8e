#!/usr/bin/perl
# A FastCGI AUTHORIZER (FCGI module; Debian: libfcgi-perl): HTTP Basic
# credentials checked against .htusers (htpasswd -s format: user:{SHA}hash).
# 200 lets the request through; its Variable-NAME headers become environment
# variables of the rest of the request. Anything else is the visitor's answer.
use strict;
use warnings;
use FCGI;
use MIME::Base64 qw(decode_base64);
use Digest::SHA qw(sha1_base64);

# Re-read on every request, so editing .htusers needs no restart.
sub users {
    my %u;
    open(my $fh, '<', '.htusers') or return \%u;    # the worker runs in this directory
    while (my $line = <$fh>) {
        chomp $line;
        my ($name, $hash) = split(/:/, $line, 2);
        $u{$name} = $hash if defined $hash;
    }
    close $fh;
    return \%u;
}

my %env;
my $request = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%env);
while ($request->Accept() >= 0) {
    my ($user, $pass);
    if (($env{HTTP_AUTHORIZATION} // '') =~ /^Basic\s+([A-Za-z0-9+\/=]+)$/) {
        ($user, $pass) = split(/:/, decode_base64($1), 2);
    }
    my $known = users();
    if (defined $pass && $user =~ /^[\w.@-]+$/ && defined $known->{$user}
        && $known->{$user} eq '{SHA}' . sha1_base64($pass) . '=') {
        print "Status: 200 OK\r\nVariable-AUTH_USER: $user\r\nVariable-REMOTE_USER: $user\r\n\r\n";
    } else {
        print "Status: 401 Unauthorized\r\n",
              "WWW-Authenticate: Basic realm=\"members\"\r\n",
              "Content-Type: text/plain\r\n\r\n",
              "Please log in (try demo / demo).\n";
    }
}
