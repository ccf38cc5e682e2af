"""HTTPS at the door: the router's TLS contexts (`contexts`, loaded in its workers), and on the control plane's side
the certificates it is given or obtains over ACME, where they are kept, and when they are renewed."""
