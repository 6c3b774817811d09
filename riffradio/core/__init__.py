"""The ground floor: the small typed objects and rules every stage shares.

``riffradio.core`` imports nothing else of riffradio (``riffradio.errors`` is ground floor too);
every other package may import it. It holds what flows between stages (:mod:`.types`), the
knob table and the one check for numbers and strings (:mod:`.knobs`), the one description of a
request as JSON-able data (:mod:`.describe`), the defaults each stage would otherwise repeat
(:mod:`.defaults`) and the maths of the station's one audio timeline (:mod:`.timeline`).
"""
