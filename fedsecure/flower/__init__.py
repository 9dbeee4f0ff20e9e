"""fedsecure's federation on Flower (the optional extra ``fedsecure[flower]``).

* :mod:`fedsecure.flower.site_app`: the ClientApp, one hospital's side (runs
  :class:`~fedsecure.fl.site.SiteRunner`, the in-process engine's site code);
* :mod:`fedsecure.flower.server_app`: the ServerApp of a deployment;
* :mod:`fedsecure.flower.federation`: the server's rounds over a Flower grid
  (the in-process engine's sampling, combine and accounting);
* :mod:`fedsecure.flower.simulation`: Flower's simulation engine
  (``fedsecure audit --engine flower``);
* ``fedsecure/flower/app``: the Flower App directory ``flwr run`` ships.
"""

from pathlib import Path

APP_DIR = Path(__file__).parent / "app"
"""The Flower App directory to give ``flwr run``."""
