"""Learn an STM operator's behaviour from recorded trajectories (docs/learning.md)."""
