"""Trades and candles (SPEC §9): the feed's trades, their history, and the candles built from them."""
