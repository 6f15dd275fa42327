import json

def handler(context):
    params = context.get("params", {})
    action = params.get("action")
    text = params.get("text", "")
    
    try:
        if action == "count_words":
            result = len(text.split())
        elif action == "count_chars":
            result = len(text)
        elif action == "uppercase":
            result = text.upper()
        elif action == "lowercase":
            result = text.lower()
        else:
            raise ValueError(f"Unknown action: {action}")
        
        return {"result": result}
    except Exception as e:
        return {"error": str(e)}