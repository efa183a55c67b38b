"""DeepCTR-Torch 0.3.0's DeepFM, DCN or DCN-v2 on the samples ``benchmarks/ctr_auc.py`` exported: the AUC
reference. Runs in the peer's own virtual environment (torch, deepctr-torch, scikit-learn only).

    PEER_PYTHON benchmarks/peers/deepctr_auc.py SAMPLES.npz --model deepfm --epochs 20 --patience 3

Sparse: user, item, brand (one id each), category paths (a multi-hot bag, sum-pooled); dense: the
same columns ours reads. ``dcn`` is DCN's vector cross (x0 * (x . w)), ``dcnv2`` its matrix cross
(x0 * (W x + b): DCN-v2's full-rank layer, which can form a product of any two input columns).
``--net matched`` gives the peer ours' top MLP (64, 32) and 3 cross layers; ``--net defaults`` the
model's own defaults in DeepCTR-Torch 0.3.0 (DeepFM: DNN (256, 128); DCN: DNN (128, 128), 2 cross layers). Adam; one epoch at a time, the test AUC of the best valid AUC's
epoch.
Prints one JSON line.
"""

import argparse
import json
import time

import numpy as np
import torch
from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
from deepctr_torch.models import DCN, DeepFM
from sklearn.metrics import log_loss, roc_auc_score


NETS = {"matched": {"deepfm": {"dnn_hidden_units": (64, 32)}, "dcn": {"dnn_hidden_units": (64, 32), "cross_num": 3}},
        "defaults": {"deepfm": {"dnn_hidden_units": (256, 128)}, "dcn": {"dnn_hidden_units": (128, 128), "cross_num": 2}}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("samples")
    p.add_argument("--model", default="deepfm", choices=["deepfm", "dcn", "dcnv2"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--net", default="matched", choices=list(NETS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    z = np.load(args.samples)
    sizes = {k: int(z[f"size_{k}"]) for k in ("user", "item", "brand", "category")}
    dense_dim = z["train_dense"].shape[1]
    maxlen = z["train_category"].shape[1]
    columns = [SparseFeat(k, sizes[k], embedding_dim=args.dim) for k in ("user", "item", "brand")]
    columns.append(VarLenSparseFeat(SparseFeat("category", sizes["category"] + 1, embedding_dim=args.dim), maxlen,
                                    combiner="sum"))
    columns.append(DenseFeat("dense", dense_dim))

    def x_of(split):
        return {"user": z[f"{split}_user"], "item": z[f"{split}_item"], "brand": z[f"{split}_brand"],
                "category": z[f"{split}_category"], "dense": z[f"{split}_dense"]}

    kw = dict(device="cpu", seed=args.seed)
    if args.model == "deepfm":
        model = DeepFM(columns, columns, **NETS[args.net]["deepfm"], **kw)
    else:
        cross = "matrix" if args.model == "dcnv2" else "vector"
        model = DCN(columns, columns, cross_parameterization=cross, **NETS[args.net]["dcn"], **kw)
    model.compile(torch.optim.Adam(model.parameters(), lr=args.lr), "binary_crossentropy")
    best, waited, record, start = -1.0, 0, None, time.perf_counter()
    for epoch in range(args.epochs):
        model.fit(x_of("train"), z["train_label"], batch_size=args.batch, epochs=1, verbose=0, shuffle=True)
        scores = {s: model.predict(x_of(s), batch_size=4096).ravel() for s in ("valid", "test")}
        valid_auc = roc_auc_score(z["valid_label"], scores["valid"])
        if valid_auc > best:
            best, waited = valid_auc, 0
            record = {"epoch": epoch, "valid_auc": valid_auc, "test_auc": roc_auc_score(z["test_label"], scores["test"]),
                      "test_logloss": log_loss(z["test_label"], np.clip(scores["test"], 1e-7, 1 - 1e-7))}
        else:
            waited += 1
            if waited >= args.patience:
                break
    print(json.dumps({"side": f"deepctr_torch_{args.model}", **{k: round(v, 5) if isinstance(v, float) else v
                                                                for k, v in record.items()},
                      "epochs_run": epoch + 1, "wall_s": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
