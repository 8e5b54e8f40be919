def main():
    import prunestudio.engine, prunestudio.store
    print("ok", prunestudio.engine.__file__, prunestudio.store.__file__)
