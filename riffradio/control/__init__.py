"""Control flows in: OSC (``osc``), HTTP now-playing and metrics (``http``), playlist reloads
(``reload``) and systemd notifications (``systemd``). Every controller writes only through the
setters of :class:`riffradio.station.state.StationState`."""
