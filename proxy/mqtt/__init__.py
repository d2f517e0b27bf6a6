"""MQTT: Home Assistant discovery and the publisher."""
