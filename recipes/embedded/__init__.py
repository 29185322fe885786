# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Scaffolding of the embedded P2E run (`recipes/p2e.py --recipe embedded`): its generated dataset
([`embedded.dataset`]) and the stand-in pre-training of the tiny towers ([`embedded.towers`]).

Recipe code, not library code: a user of a released checkpoint never needs it, so it is not installed with the
package. A script in `recipes/` imports it as `embedded.<module>` (Python puts the script's folder on `sys.path`);
tests put `recipes/` on `sys.path` the same way.
"""
