"""Telegram chats linked to accounts: one-time link codes and the links themselves."""
