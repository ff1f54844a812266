"""One module per technology; each implements a port from `imageblur.ports`."""
