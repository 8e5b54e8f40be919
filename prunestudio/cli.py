def main():
    import prunestudio.engine
    import prunestudio.store
    print("ok", prunestudio.engine.__file__, prunestudio.store.__file__)
