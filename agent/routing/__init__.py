"""FRR configuration for peers: render the desired routing, diff it with FRR's, apply it."""
