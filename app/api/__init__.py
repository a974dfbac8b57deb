"""HTTP routes, one router per resource or protocol."""
