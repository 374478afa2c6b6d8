"""ecg-transfer-study: transfer-learning studies for ECG models at scale."""

__version__ = "0.1.0"
