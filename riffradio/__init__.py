"""riffradio: an endless, live-steerable AI radio station.

Data flows one way: playlist → plan → engine (images) → vocoder (audio) → buffer → sinks.
Control flows in from OSC to the station's state, which the producer reads before it plans
each clip. See docs/architecture.md.
"""

__version__ = "0.1.0"
