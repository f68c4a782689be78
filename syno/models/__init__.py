"""syno.models"""
