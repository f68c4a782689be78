"""syno.bench"""
