"""Control flows in: OSC (``osc``), the HTTP studio (``http``), playlist reloads (``reload``) and
systemd notifications (``systemd``). Every controller gets narrow views of the station from the
application (the state, the metrics, a now-playing callable) and writes only through the setters
of :class:`riffradio.station.state.StationState`."""
