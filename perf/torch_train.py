"""The PyTorch peers' training loop (perf/torch_mlp.py, perf/torch_cnn.py):
plain `torch.optim.SGD` (momentum as given), a cosine schedule per step
when asked, randperm batches over pre-loaded tensors, the test set
evaluated after every epoch. Only the model differs between the peers.
"""

import math
import time


def train(torch, model, args, xtr, ytr, xte, yte):
    """Trains `model` for args.epochs; returns (per_epoch, train_seconds,
    eval_seconds), per_epoch a list of dicts as the engine's --json has
    them."""
    n = xtr.shape[0]
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    steps_per_epoch = -(-n // args.batch_size)
    total = steps_per_epoch * args.epochs
    if args.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / total)))
    else:
        sched = None
    F = torch.nn.functional

    per_epoch = []
    train_seconds = eval_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n)
        loss_sum = 0.0
        model.train()
        for i in range(0, n, args.batch_size):
            idx = order[i:i + args.batch_size]
            x, y = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += float(loss.detach()) * x.shape[0]
        secs = time.perf_counter() - start
        train_seconds += secs
        e0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            z = model(xte)
            test_loss = float(F.cross_entropy(z, yte, reduction="sum").double()) / len(yte)
            test_acc = float((z.argmax(1) == yte).double().mean())
        eval_seconds += time.perf_counter() - e0
        per_epoch.append({"epoch": epoch, "train_loss": loss_sum / n, "test_loss": test_loss,
                          "test_accuracy": test_acc, "seconds": secs})
    return per_epoch, train_seconds, eval_seconds
