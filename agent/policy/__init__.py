"""Path selection to peers: multilink policies on stock VPP (ACL + ABF).

model (controller params -> plain rules), decide (health -> chosen paths),
translate (rules + choices -> VPP operations with undo, observed-vs-desired
diff), manager (the I/O: executor, health polling, re-programming), render
(peerctl output). Only `manager` does I/O.
"""
