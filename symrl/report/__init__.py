"""From runs on disk to tables and statistics."""
