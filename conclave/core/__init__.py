"""Wiring of the server: the SIP stack, request routing, the proxy, authentication."""
