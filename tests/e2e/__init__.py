"""End-to-end tests against real SIP peers (sipp, sipsak, baresip)."""
