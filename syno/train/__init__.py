"""syno.train"""
