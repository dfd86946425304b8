"""Side effects: storage (memory, SQL), migrations, and their wiring helpers."""
