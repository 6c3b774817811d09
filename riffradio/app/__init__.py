"""The application: the one place that builds and wires the station (the composition root).

:class:`~riffradio.app.application.StationApp` reads the playlist, builds the outputs
(:mod:`.outputs`), the engine and the vocoder, the :class:`~riffradio.station.station.Station`
and its controllers (OSC, HTTP, systemd notifier and watchdog, playlist reload), runs them and
tears them down in order. :mod:`.cli` is the ``riffradio`` command line, :mod:`.commands` its
``check``/``play``/``render``. Nothing below this layer imports it.
"""
