"""Signed webhooks: the events a client asked to be told about, signed the Standard
Webhooks way and delivered at least once, never to an address the operator did not allow
(docs/operations.md, "Webhooks")."""
