"""The control plane under a simulated 10,000-node fleet (see ``__main__``)."""
