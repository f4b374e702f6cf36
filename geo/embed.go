package geo

import _ "embed"

// embeddedMMDB is the default database: geo-whois-asn-country 2.3.2026061719
// from sapics/ip-location-db, NRO data under CC BY 4.0. See
// geo/data/README.md for source, licence, attribution and why it is meant
// for tests and as a fallback, not as the production database.
//
//go:embed data/geo-whois-asn-country.mmdb
var embeddedMMDB []byte
