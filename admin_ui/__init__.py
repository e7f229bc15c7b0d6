"""The admin panel's templates and static files, shipped in the wheel as package data
next to `gateway` (which finds them as `../admin_ui` from its own package)."""
