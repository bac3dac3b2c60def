"""The languages backstep writes prose in.

The message catalogue (``backstep.render.i18n``) has one dictionary per language, and every op a
title in each (``Op.title``, required by ``backstep.ops.register``); both read the list here, below
either of them, so that the op table can check its titles without importing the renderers.
"""

LANGS = ("en", "zh")
