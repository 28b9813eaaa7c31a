//! Import and export formats for reservations (dnsmasq, ethers, dhcp-hostsfile, ISC Kea): pure
//! parsing and printing, no I/O and no database.
