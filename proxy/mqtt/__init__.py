"""MQTT: Home Assistant discovery and the publisher.

`discovery` is pure (topics, payloads and discovery configs from the measurement table);
`publisher` follows the hub while connected to the broker and runs commands as rows of the
actions table. May import `proxy.site` and the shared modules (`config`, `errors`,
`reports`, `ratelog`), never `proxy.api` or `proxy.gateway`; paho-mqtt is imported only
when PW_MQTT_HOST is set.
"""
