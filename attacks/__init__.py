"""attacks: privacy attacks on any torch model, usable without fedsecure's engine.

An attack receives only what its threat position sees (the server's messages,
the global models a client receives, or the released final model), never the
ground truth. Gradient inversion (``attacks.inversion``), membership inference
(``attacks.membership``) and empirical privacy auditing arrive here as their
issues land; fedsecure's audit runs them from each threat position.
"""
