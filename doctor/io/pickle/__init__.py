"""The static pickle reader behind ``doctor.io.pickle_scan`` (use that module; these are its parts).

Layers, each importing only the ones below it:

- ``values``: the inert stand-ins (``Global``, ``Call``, ``PersId``...), the machine state and
  bounded reads, and ``OpTable``;
- ``ops`` (data opcodes) and ``calls`` (the opcodes where an unpickler would import or call),
  each filling its own ``TABLE``;
- ``vm``: merges the two tables and walks one pickle (``run_pickle``);
- ``streams``: runs of pickles and torch's legacy format; ``dcp``: where the items of a
  torch.distributed.checkpoint shard lie (from its ``.metadata``, read by the VM);
  ``tar``: torch's old tar format;
  ``containers``: what a file is and where its pickles are (``walk_file``);
- ``tensors`` (tensor metadata from a walked object) and ``allow`` (the allow-list) stand apart.
"""
