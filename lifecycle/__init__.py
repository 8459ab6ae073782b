"""A recording's life beyond one download: backfill, deletion at Twilio, erasure, retention."""
