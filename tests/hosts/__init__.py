"""Hosts for multi-host tests: network namespaces on a test bridge (``network.py``) and
private servers that listen on the bridge only (``servers.py``); tests/test_multihost.py
uses them."""
