"""Training methods beside DeepPose's own: each uses the models package and is never
imported by it (Tompson et al.'s phased training: tompson.py)."""
