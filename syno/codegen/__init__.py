"""syno.codegen"""
