"""Path selection to peers: multilink policies on stock VPP (ACL + ABF).

model (controller params -> plain rules), decide (health -> chosen paths),
translate (rules + choices -> desired rules), kinds (the ACL, ABF policy and
attachment kinds: observed-vs-desired diff into VPP operations with undo),
manager (the I/O: executor, health polling, re-programming), render (peerctl
output). Only `manager` does I/O.
"""
