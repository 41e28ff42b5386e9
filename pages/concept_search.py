"""Concept search: which features are described by a word, over all features explained so far."""

import pandas as pd
import streamlit as st

from ui import errors, loaders, shell, state, views


def main() -> None:
    opened = views.open_page(
        "Concept search",
        "Type a word (e.g. a colour, an object, a texture) to find the features whose "
        "concepts contain it, best score first. Only features explained so far are "
        "searched: explore features, or run the precompute on the Setup page to explain "
        "them all.",
        "word")
    if opened is None:
        return
    falcon, settings = opened
    table = loaders.feature_table(falcon, settings)
    st.caption(f"{len(table)} of {falcon.num_features} features explained so far with these settings.")
    state.seed_widget(state.widget_key("word"), state.get("word") or "")
    word = st.text_input("Word or phrase", key=state.widget_key("word"),
                         placeholder="e.g. dog, striped, red car")
    word = (word or "").strip()
    state.put("word", word or None)
    if not word:
        if len(table):
            st.markdown("Some concepts found so far:")
            seen = []
            for t in table["top concepts"]:
                for w in str(t).split(", "):
                    if w and w not in seen:
                        seen.append(w)
            st.caption(", ".join(seen[:40]))
        return
    if len(table) == 0:
        st.warning("No feature has been explained yet, so there is nothing to search.")
        st.info("**What to do:** open the Feature explorer, or start the precompute on the Setup "
                "page.")
        st.page_link("pages/setup.py", label="Go to Setup", icon=":material/settings:")
        return
    hits = errors.call(falcon.search, word, settings, what="Search failed")
    if hits is None:
        return
    if not hits:
        st.info(f"No explained feature has “{word}” among its kept concepts. Try a related "
                "word, the singular form, or explain more features.")
        return
    df = pd.DataFrame(hits)
    df["score"] = df["score"].round(4)
    df["coherence"] = df["coherence"].astype(float).round(3)
    st.markdown(f"**{len(df)} match(es)** in {df['feature'].nunique()} feature(s)")
    with st.container(key="search_results"):
        fa = dict(zip(table["feature"], table["faithfulness"]))  # issue 12: each feature's score
        df["faithfulness"] = [fa.get(f) for f in df["feature"]]
        st.dataframe(df[["feature", "concept", "kind", "rank", "score", "coherence",
                         "faithfulness"]],
                     hide_index=True, width="stretch")
    st.download_button("Download the matches (CSV)", df.to_csv(index=False),
                       file_name=f"falcon_search_{word}.csv", mime="text/csv", key="dl_search")
    st.markdown("Open a feature:")
    cols = st.columns(6)
    for n, f in enumerate(list(dict.fromkeys(df["feature"].tolist()))[:18]):
        cols[n % 6].page_link("pages/feature_explorer.py", label=f"Feature {f}", icon=":material/search:",
                              query_params={"feature": str(f)})


shell.page(main)
