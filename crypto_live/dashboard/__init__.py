"""The live dashboard: latest tickers, a price chart and the pipeline's health in a browser.

``views`` shapes API answers (pure), ``source`` reads DynamoDB, lease tables and /metrics,
``server`` serves ``static/`` and the JSON API with the standard library.
"""
