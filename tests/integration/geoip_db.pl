#!/usr/bin/perl
# Writes a MaxMind DB for the geoip tests (Debian's libmaxmind-db-writer-perl; nothing is downloaded):
#   geoip_db.pl country OUT NETWORK=CODE ...      (GeoIP2-Country shape: country.iso_code)
#   geoip_db.pl asn OUT NETWORK=NUMBER ...        (GeoLite2-ASN shape: autonomous_system_number)
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;

my ($kind, $out, @pairs) = @ARGV;
my %types = $kind eq 'asn'
    ? (autonomous_system_number => 'uint32', autonomous_system_organization => 'utf8_string')
    : (country => 'map', iso_code => 'utf8_string');
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 6, record_size => 24, database_type => ($kind eq 'asn' ? 'GeoLite2-ASN' : 'GeoIP2-Country'),
    languages => ['en'], description => { en => 'px test' }, map_key_type_callback => sub { $types{ $_[0] } },
    remove_reserved_networks => 0, alias_ipv6_to_ipv4 => 1);
for my $p (@pairs) {
    my ($net, $v) = split /=/, $p, 2;
    $tree->insert_network($net, $kind eq 'asn'
        ? { autonomous_system_number => $v + 0, autonomous_system_organization => "AS$v" }
        : { country => { iso_code => $v } });
}
open my $fh, '>:raw', "$out.tmp" or die "$out.tmp: $!";
$tree->write_tree($fh);
close $fh;
rename "$out.tmp", $out or die "$out: $!";
