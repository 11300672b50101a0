"""``streamae backtest``: recorded data through the daemon's own code, and a report.

* :mod:`~streamae.backtest.recording`: CSV, JSON-lines and ``.npy`` files as rows (values,
  key, timestamp, label);
* :mod:`~streamae.backtest.engine`: the rows through :mod:`streamae.replay` (decode, window,
  model, threshold: the daemon's path), verdicts per key and incidents from the daemon's
  :class:`~streamae.incidents.IncidentTracker`, and a sweep over target false-alarm rates;
* :mod:`~streamae.backtest.evaluation`: point-wise and event-level figures against labels;
* :mod:`~streamae.backtest.report`: ``report.md``, ``verdicts.csv``, ``summary.json`` and
  the settings to deploy; :mod:`~streamae.backtest.plots`: one PNG per key (matplotlib,
  the optional ``report`` extra).
"""
