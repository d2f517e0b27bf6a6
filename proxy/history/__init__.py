"""History and events: an embedded SQLite store of every measurement, daily energy, events
(grid down and up, firmware, alerts, settings, reachability), the firmware watch and the
webhooks that tell owners what happened. `service.build_history` puts it together."""
