"""Drop-in adapters to other libraries; each module imports its library (an optional extra)."""
