"""Commercial-performance cockpit: sales mart, audits, forecasts, targets, KPIs."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
